//! wk-api: the Kubernetes-shaped object model of wk.
//!
//! Objects travel as JSON documents with Kubernetes' field names (`apiVersion`, `kind`,
//! `metadata`, `spec`, `status`). The typed model is `k8s-openapi` (re-exported as
//! [`k8s`]); this crate adds what an API server needs around it: the table of resource
//! types ([`resource`]), strict decoding that reports unknown fields ([`decode`]),
//! validation with Kubernetes-style field paths ([`validation`]), label and field
//! selectors ([`selector`]), quantities ([`quantity`]) and the `Status` error object
//! ([`status`]).

pub mod auth;
pub mod decode;
pub mod logfile;
pub mod meta;
pub mod net;
pub mod objects;
pub mod quantity;
pub mod resource;
pub mod runtime;
pub mod selector;
pub mod status;
pub mod validation;

pub use k8s_openapi as k8s;
pub use resource::ResourceType;
pub use status::Status;
