//! The runtime contract: what a node agent asks of a runtime (`wasm` or `oci`).
//!
//! A runtime prepares images, starts containers from a fully resolved
//! [`ContainerConfig`] (env values already looked up, volumes already materialised as
//! host directories), reports their [`ContainerState`], waits for them, and stops them
//! (grace period, then kill). Both runtime crates implement [`Runtime`]; the agent picks
//! one by the pod's `runtimeClassName`.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Who a container belongs to (also what the downward API exposes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIdentity {
    pub name: String,
    /// `spec.hostname`, or the pod's name: what `hostname` says inside (empty: the name).
    pub hostname: String,
    pub namespace: String,
    pub uid: String,
    pub node_name: String,
    pub pod_ip: String,
}

/// A host directory made visible inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// A port the container serves, and where the runtime should listen for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    pub container_port: u16,
    pub host_ip: IpAddr,
    /// The port to listen on (the container port unless the agent remaps it).
    pub host_port: u16,
    pub protocol: String,
}

/// Resource limits, resolved from `resources.limits`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory (and table) bytes a container may grow to.
    pub memory_bytes: Option<u64>,
    /// CPU in millicores (informs time slicing).
    pub cpu_millis: Option<u64>,
    /// Wall-clock limit for one request to a service.
    pub request_timeout: Option<Duration>,
}

/// Where a container's stdout/stderr go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogConfig {
    pub path: PathBuf,
    /// The file is rotated (to `<path>.1`) when it grows past this size.
    pub max_bytes: u64,
}

/// `securityContext` settings a runtime with processes applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub read_only_root_filesystem: bool,
    /// Capabilities added to and dropped from the default set (`ALL` drops all).
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    /// `seccompProfile.type: Unconfined`: no syscall filter (the default is the runtime's
    /// default filter).
    pub seccomp_unconfined: bool,
}

/// Everything needed to start one container.
#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    /// Unique per container instance on the node (`<pod uid>/<name>/<restart>`).
    pub id: String,
    pub pod: PodIdentity,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<Mount>,
    pub ports: Vec<PortBinding>,
    pub limits: Limits,
    /// Whether outbound network access (outgoing HTTP, sockets) is allowed.
    pub allow_outbound: bool,
    pub log: LogConfig,
    pub security: Security,
}

/// A container's state, as `containerStatuses[].state` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: jiff::Timestamp,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        message: String,
        started_at: jiff::Timestamp,
        finished_at: jiff::Timestamp,
    },
}

impl ContainerState {
    pub fn is_terminated(&self) -> bool {
        matches!(self, ContainerState::Terminated { .. })
    }
}

/// What an image turned out to be once prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedImage {
    /// `sha256:<hex>` of the image content.
    pub digest: String,
    /// Whether preparing it needed a compilation (false when served from cache).
    pub compiled: bool,
}

/// `imagePullPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The policy a container gets: its own, or Kubernetes' default (`Always` for
    /// `:latest` or untagged images, `IfNotPresent` otherwise).
    pub fn of(field: Option<&str>, image: &str) -> PullPolicy {
        match field {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            _ => {
                let last = image.rsplit('/').next().unwrap_or(image);
                if image.contains('@') {
                    PullPolicy::IfNotPresent
                } else if !last.contains(':') || last.ends_with(":latest") {
                    PullPolicy::Always
                } else {
                    PullPolicy::IfNotPresent
                }
            }
        }
    }
}

/// Credentials for one registry (from an `imagePullSecrets` Secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    /// `host[:port]` as in the image reference (`docker.io` for Docker Hub).
    pub registry: String,
    pub username: String,
    pub password: String,
}

/// How to get an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullOptions {
    pub policy: PullPolicy,
    pub credentials: Vec<RegistryCredential>,
}

/// What a command run in a container produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runtime failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The workload is not for this runtime (youki's `CantHandle`).
    #[error("runtime {runtime} cannot run this workload: {reason}")]
    CantHandle {
        runtime: &'static str,
        reason: String,
    },
    /// The image could not be fetched (`ErrImagePull`).
    #[error("pulling image {image:?}: {message}")]
    Pull { image: String, message: String },
    /// The image is not a valid workload for this runtime (`InvalidImage`).
    #[error("image {image:?} is invalid: {message}")]
    InvalidImage { image: String, message: String },
    /// The container could not be started (`CreateContainerError`).
    #[error("starting container {id}: {message}")]
    Start { id: String, message: String },
    #[error("no container {0}")]
    NotFound(String),
}

impl RuntimeError {
    /// The `waiting.reason` Kubernetes shows for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            RuntimeError::CantHandle { .. } => "CreateContainerConfigError",
            RuntimeError::Pull { .. } => "ErrImagePull",
            RuntimeError::InvalidImage { .. } => "InvalidImageName",
            RuntimeError::Start { .. } => "CreateContainerError",
            RuntimeError::NotFound(_) => "ContainerNotFound",
        }
    }
}

/// A container runtime.
pub trait Runtime: Send + Sync + 'static {
    /// `wasm` or `oci`: the `runtimeClassName` it serves.
    fn name(&self) -> &'static str;

    /// Fetches, verifies and (for Wasm) compiles an image, using caches.
    fn prepare(
        &self,
        image: &str,
        pull: &PullOptions,
    ) -> impl Future<Output = Result<PreparedImage, RuntimeError>> + Send;

    /// Starts a container; returns once it is running (or failed to start).
    fn start(
        &self,
        config: ContainerConfig,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The current state of a container.
    fn state(&self, id: &str) -> Result<ContainerState, RuntimeError>;

    /// Waits until the container terminates.
    fn wait(&self, id: &str) -> impl Future<Output = Result<ContainerState, RuntimeError>> + Send;

    /// Asks the container to stop, kills it after `grace`, and returns its final state.
    fn stop(
        &self,
        id: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<ContainerState, RuntimeError>> + Send;

    /// Forgets a terminated container.
    fn remove(&self, id: &str) -> Result<(), RuntimeError>;

    /// Runs a command inside a running container (exec probes, `wk exec`), killing it
    /// after `timeout`.
    fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput, RuntimeError>> + Send {
        let _ = (id, command, timeout);
        let runtime = self.name();
        async move {
            Err(RuntimeError::CantHandle {
                runtime,
                reason: "a container of this runtime has no processes to exec".into(),
            })
        }
    }

    /// The pod is over on this node: releases what its containers shared (its network).
    fn release_pod(&self, pod_uid: &str) -> impl Future<Output = ()> + Send {
        let _ = pod_uid;
        async {}
    }
}
