//! wk-dns: hickory-based service discovery for `<svc>.<ns>.svc.cluster.local`.
//!
//! Not implemented yet: this crate is a placeholder in the workspace layout, filled by the
//! networking issue. It exports nothing.
