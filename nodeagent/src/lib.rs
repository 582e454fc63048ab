//! wk-nodeagent: the kubelet and kube-proxy roles of wk (registration, leases, pod
//! workers, probes, logs, the in-agent L4 balancer).
//!
//! Not implemented yet: this crate is a placeholder in the workspace layout, filled by the
//! node-agent issue. It exports nothing.
