//! The runtimes a pod can run on, behind the one contract (`wk_api::runtime::Runtime`):
//! the agent picks by the pod's `runtimeClassName`.

use std::sync::Arc;
use std::time::Duration;

use wk_api::runtime::{
    ContainerConfig, ContainerState, ExecOutput, PreparedImage, PullOptions, Runtime, RuntimeError,
};
use wk_runtime_oci::OciRuntime;
use wk_runtime_wasm::WasmRuntime;

#[derive(Clone)]
pub(crate) enum PodRuntime {
    Wasm(Arc<WasmRuntime>),
    Oci(Arc<OciRuntime>),
}

impl Runtime for PodRuntime {
    fn name(&self) -> &'static str {
        match self {
            PodRuntime::Wasm(r) => r.name(),
            PodRuntime::Oci(r) => r.name(),
        }
    }

    async fn prepare(
        &self,
        image: &str,
        pull: &PullOptions,
    ) -> Result<PreparedImage, RuntimeError> {
        match self {
            PodRuntime::Wasm(r) => r.prepare(image, pull).await,
            PodRuntime::Oci(r) => r.prepare(image, pull).await,
        }
    }

    async fn start(&self, config: ContainerConfig) -> Result<(), RuntimeError> {
        match self {
            PodRuntime::Wasm(r) => r.start(config).await,
            PodRuntime::Oci(r) => r.start(config).await,
        }
    }

    fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        match self {
            PodRuntime::Wasm(r) => r.state(id),
            PodRuntime::Oci(r) => r.state(id),
        }
    }

    async fn wait(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        match self {
            PodRuntime::Wasm(r) => r.wait(id).await,
            PodRuntime::Oci(r) => r.wait(id).await,
        }
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<ContainerState, RuntimeError> {
        match self {
            PodRuntime::Wasm(r) => r.stop(id, grace).await,
            PodRuntime::Oci(r) => r.stop(id, grace).await,
        }
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        match self {
            PodRuntime::Wasm(r) => r.remove(id),
            PodRuntime::Oci(r) => r.remove(id),
        }
    }

    async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        match self {
            PodRuntime::Wasm(r) => r.exec(id, command, timeout).await,
            PodRuntime::Oci(r) => r.exec(id, command, timeout).await,
        }
    }

    async fn release_pod(&self, pod_uid: &str) {
        match self {
            PodRuntime::Wasm(r) => r.release_pod(pod_uid).await,
            PodRuntime::Oci(r) => r.release_pod(pod_uid).await,
        }
    }
}
