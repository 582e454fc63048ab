//! wk-runtime-oci: the runc-driven container runtime and image store.
//!
//! Not implemented yet: this crate is a placeholder in the workspace layout, filled by the
//! runtime-oci issue. It exports nothing.
