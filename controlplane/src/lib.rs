//! wk-controlplane: the control plane of wk.
//!
//! - [`store`]: openraft over redb; every write is a Raft command, revisions are the
//!   cluster-wide resourceVersion, and a watch hub streams changes.
//! - [`apiserver`]: the Kubernetes-shaped REST API (axum) over the store.
//! - [`auth`]: bearer tokens and the client config written at first start.
//! - [`server`]: wires them together for `wk server`.

pub mod apiserver;
pub mod auth;
pub mod cluster;
pub mod controllers;
pub mod pki;
pub mod server;
pub mod store;
